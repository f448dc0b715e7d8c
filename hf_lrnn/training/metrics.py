"""Loss and accuracy over scored positions (labels aligned with the outputs, -100 = not scored).

MAD (Poli et al. 2024) reports torchmetrics' `MulticlassAccuracy(num_classes=vocab, ignore_index=-100)`,
whose default average is "macro": the mean, over classes that occur as a target or a prediction, of the
per-class recall tp / (tp + fn) (a class only ever predicted counts as recall 0). `TokenAccuracy` computes
that from counts accumulated over the whole test set, beside the plain (micro) token accuracy and the
sequence accuracy (every scored position of a sequence right).
"""

from typing import Optional

import torch
import torch.nn.functional as F

from ..lm_loss import causal_lm_loss, resolve_loss_backend


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, loss_backend: Optional[str] = None) -> torch.Tensor:
    """Mean cross-entropy over positions with labels != -100; 0 (with a gradient) when none is scored.

    logits [B, T, V], labels [B, T] aligned: labels[b, t] is the target of output t (no shift). loss_backend as the
    models' `config.loss_backend`: None runs the one-kernel loss of hf_lrnn/lm_loss.py on CUDA (no float32 copy of
    the logits) and F.cross_entropy in float32 elsewhere; "torch" or "triton" force one of them.
    """
    count = (labels != -100).sum().clamp(min=1)
    if resolve_loss_backend(loss_backend, logits.device) == "triton":
        return causal_lm_loss(logits, None, logits.shape[-1], num_items_in_batch=count, shift_labels=labels)
    total = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum")
    return total / count


class TokenAccuracy:
    """Accumulates micro, macro (MAD's torchmetrics default) and sequence accuracy and the mean loss."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.true_positive = torch.zeros(num_classes, dtype=torch.long)
        self.false_positive = torch.zeros(num_classes, dtype=torch.long)
        self.false_negative = torch.zeros(num_classes, dtype=torch.long)
        self.sequences = 0
        self.sequences_correct = 0
        self.loss_sum = 0.0
        self.loss_count = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """logits [B, T, V], labels [B, T] (aligned, -100 = not scored)."""
        scored = labels != -100  # [B, T]
        predictions = logits.argmax(-1)
        target, predicted = labels[scored].cpu(), predictions[scored].cpu()
        hit = target == predicted
        V = self.num_classes
        self.true_positive += torch.bincount(target[hit], minlength=V)[:V]
        self.false_negative += torch.bincount(target[~hit], minlength=V)[:V]
        self.false_positive += torch.bincount(predicted[~hit], minlength=V)[:V]
        has_scored = scored.any(1)
        all_right = ((predictions == labels) | ~scored).all(1)
        self.sequences += int(has_scored.sum())
        self.sequences_correct += int((all_right & has_scored).sum())
        self.loss_sum += float(
            F.cross_entropy(logits[scored].float(), labels[scored], reduction="sum") if scored.any() else 0.0
        )
        self.loss_count += int(scored.sum())

    def merge(self, counts: torch.Tensor) -> None:
        """Add the counts of another process (as returned by `counts()`)."""
        V = self.num_classes
        self.true_positive += counts[:V].long()
        self.false_positive += counts[V : 2 * V].long()
        self.false_negative += counts[2 * V : 3 * V].long()
        self.sequences += int(counts[3 * V])
        self.sequences_correct += int(counts[3 * V + 1])
        self.loss_sum += float(counts[3 * V + 2])
        self.loss_count += int(counts[3 * V + 3])

    def counts(self) -> torch.Tensor:
        """Every count in one float64 vector (to all-reduce across processes)."""
        extra = [self.sequences, self.sequences_correct, self.loss_sum, self.loss_count]
        return torch.cat(
            [self.true_positive, self.false_positive, self.false_negative, torch.tensor(extra, dtype=torch.float64)]
        ).double()

    @classmethod
    def from_counts(cls, counts: torch.Tensor, num_classes: int) -> "TokenAccuracy":
        result = cls(num_classes)
        result.merge(counts)
        return result

    def compute(self) -> dict:
        tp, fp, fn = self.true_positive.double(), self.false_positive.double(), self.false_negative.double()
        scored = int((tp + fn).sum())
        present = (tp + fp + fn) > 0
        recall = tp / (tp + fn).clamp(min=1)
        return {
            "accuracy": float(tp.sum() / scored) if scored else 0.0,
            "macro_accuracy": float(recall[present].mean()) if present.any() else 0.0,
            "sequence_accuracy": self.sequences_correct / self.sequences if self.sequences else 0.0,
            "loss": self.loss_sum / self.loss_count if self.loss_count else 0.0,
            "scored_tokens": scored,
        }
