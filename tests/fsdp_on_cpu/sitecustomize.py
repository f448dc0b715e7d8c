"""Test-only: let accelerate run FSDP on CPU processes (gloo), so CI exercises the FSDP code path of
scripts/train.py without GPUs. accelerate 1.15 only turns `ACCELERATE_USE_FSDP` into FSDP on accelerators and
keeps CPU processes as MULTI_CPU (plain DDP); torch's FSDP2 itself runs on CPU. Active only when this folder is
on PYTHONPATH and HF_LRNN_TEST_FSDP_ON_CPU=1 (tests/test_fsdp_cpu.py sets both)."""

import os

if os.environ.get("HF_LRNN_TEST_FSDP_ON_CPU") == "1":
    import accelerate.state as state
    from accelerate.utils import DistributedType

    original_init = state.AcceleratorState.__init__

    def __init__(self, *args, fsdp_plugin=None, **kwargs):
        original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU and fsdp_plugin is not None:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            # AcceleratorState re-reads the process state on every instantiation: change it there too
            state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    state.AcceleratorState.__init__ = __init__
