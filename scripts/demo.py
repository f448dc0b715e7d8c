"""Demo: train a small BD-LRU language model on a synthetic task (CPU, ~1 minute), save it, reload it with
AutoModelForCausalLM and generate.

Task: arithmetic progressions modulo 16. A sequence is <s> a, a+k, a+2k, ... (mod 16) with a step k in
{1, 2, 3}; after two numbers the model must keep k in its recurrent state to continue the progression.

    python scripts/demo.py [--steps 300] [--out outputs/demo-bdlru]
"""

import argparse

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM

from hf_lrnn import BDLRUConfig, BDLRUForCausalLM

MODULUS = 16
MAX_STEP = 3
BOS = 0
OFFSET = 1  # number n is token n + 1


def progressions(batch, length, generator):
    start = torch.randint(0, MODULUS, (batch, 1), generator=generator)
    step = torch.randint(1, MAX_STEP + 1, (batch, 1), generator=generator)
    numbers = (start + step * torch.arange(length - 1)) % MODULUS
    return torch.cat([torch.full((batch, 1), BOS), numbers + OFFSET], dim=1)


def accuracy(model, generator, length):
    ids = progressions(512, length, generator)
    with torch.no_grad():
        predictions = model(ids, use_cache=False).logits.argmax(-1)
    # positions 3.. are determined by the first two numbers
    return (predictions[:, 2:-1] == ids[:, 3:]).float().mean().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--length", type=int, default=24)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--out", default="outputs/demo-bdlru")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    config = BDLRUConfig(
        vocab_size=MODULUS + OFFSET, hidden_size=64, num_hidden_layers=2, num_blocks=16, block_size=4,
        bos_token_id=BOS, pad_token_id=BOS,
    )
    model = BDLRUForCausalLM(config)
    print(f"BD-LRU: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{config.num_blocks} blocks of size {config.block_size}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps, eta_min=args.lr / 10)
    data = torch.Generator().manual_seed(args.seed)
    model.train()
    progress = tqdm(range(args.steps), desc="train", mininterval=2.0)
    for step in progress:
        ids = progressions(args.batch_size, args.length, data)
        loss = model(ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    held_out = torch.Generator().manual_seed(args.seed + 1)
    print(f"held-out next-number accuracy (positions 3+): {accuracy(model, held_out, args.length):.3f}")

    model.save_pretrained(args.out)
    reloaded = AutoModelForCausalLM.from_pretrained(args.out).eval()
    print(f"saved to {args.out} and reloaded as {type(reloaded).__name__}")
    prompt = torch.tensor([[BOS, 3 + OFFSET, 5 + OFFSET]])  # 3, 5, ... -> 7, 9, 11, ...
    generated = reloaded.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=BOS)
    numbers = [t - OFFSET for t in generated[0, 1:].tolist()]
    expected = [(3 + 2 * i) % MODULUS for i in range(len(numbers))]
    print("prompt:    3 5")
    print("generated:", " ".join(map(str, numbers[2:])))
    print("expected: ", " ".join(map(str, expected[2:])))


if __name__ == "__main__":
    main()
