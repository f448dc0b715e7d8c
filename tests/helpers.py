"""Helpers shared by several test modules (imported explicitly, not through conftest)."""

# The start of every script that must run WITHOUT the hf_lrnn package (remote code only): it blocks the import and
# fails loudly if the package could still be imported, since the test would then prove nothing.
HIDE_HF_LRNN = """\
import sys
sys.modules["hf_lrnn"] = None  # make sure the package itself cannot be imported
try:
    import hf_lrnn  # noqa
    raise SystemExit("hf_lrnn is importable; the test would prove nothing")
except ImportError:
    pass
"""
