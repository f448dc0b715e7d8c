"""Training-side code: task generators, data, metrics and plots used by `scripts/`.

Nothing here travels with a checkpoint (remote code copies only the flat modeling modules), so this
subpackage may import `datasets`, `accelerate` and `matplotlib` freely.
"""
