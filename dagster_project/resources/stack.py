"""Where the local stack's services listen (`<K2_RUN_DIR>/stack.json`); see `k2_ops.deploy.settings`."""

from k2_ops.deploy.settings import stack_run_dir, stack_url

__all__ = ["stack_run_dir", "stack_url"]
