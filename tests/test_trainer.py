"""transformers.Trainer fine-tunes a tiny model: the loss goes down, checkpoints are written and resumed."""

import os

import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from helpers import tiny_model


class RepeatDataset(torch.utils.data.Dataset):
    """Sequences of a repeated 4-token motif: easy to learn, so the loss must fall quickly."""

    def __init__(self, n=64, length=16, seed=0):
        g = torch.Generator().manual_seed(seed)
        motifs = torch.randint(3, 37, (n, 4), generator=g)
        self.ids = motifs.repeat(1, length // 4)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def make_trainer(model, out_dir, max_steps):
    args = TrainingArguments(
        output_dir=str(out_dir), max_steps=max_steps, per_device_train_batch_size=8, gradient_accumulation_steps=2,
        learning_rate=3e-2, logging_steps=10, save_steps=20, save_strategy="steps", report_to="none",
        use_cpu=True, seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )
    return Trainer(model=model, args=args, train_dataset=RepeatDataset())


def test_trainer_learns_saves_and_resumes(arch, tmp_path):
    model = tiny_model(arch, m=2).train()
    data = RepeatDataset()
    batch = {k: torch.stack([data[i][k] for i in range(16)]) for k in ("input_ids", "labels")}
    with torch.no_grad():
        before = model(**batch).loss.item()
    trainer = make_trainer(model, tmp_path, max_steps=40)
    trainer.train()
    with torch.no_grad():
        after = model.eval()(**batch).loss.item()
    assert after < before - 0.5, (before, after)  # about 3.6 -> 2.6 in 40 steps
    checkpoint = tmp_path / "checkpoint-40"
    assert {"model.safetensors", "optimizer.pt", "trainer_state.json", "config.json"} <= set(os.listdir(checkpoint))

    # resume from the step-20 checkpoint and run to step 40: same weights as the uninterrupted run
    resumed_model = tiny_model(arch, m=2, seed=99).train()
    resumed = make_trainer(resumed_model, tmp_path, max_steps=40)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-20"))
    assert resumed.state.global_step == 40
    for (name, p), q in zip(model.named_parameters(), resumed_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
    reloaded = AutoModelForCausalLM.from_pretrained(checkpoint)
    torch.testing.assert_close(reloaded(batch["input_ids"]).logits, model(batch["input_ids"]).logits)
