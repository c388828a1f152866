"""Process-group hygiene: a DDP worker destroys its process group at exit, before the interpreter tears down."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_process_group_is_destroyed_once_at_exit(tmp_path):
    script = textwrap.dedent(
        f"""
        import atexit
        import torch.distributed as dist
        import tal.utils.distributed as tud

        calls = []
        destroy = tud._destroy_process_group
        tud._destroy_process_group = lambda: (calls.append(1), destroy())
        # exit handlers run last-in first-out: this one runs after tal's
        atexit.register(lambda: print(f"destroyed {{len(calls)}}x, initialised: {{dist.is_initialized()}}"))
        tud.destroy_process_group_at_exit()  # no group yet: a no-op
        dist.init_process_group("gloo", init_method="file://{tmp_path / "store"}", rank=0, world_size=1)
        tud.destroy_process_group_at_exit()
        tud.destroy_process_group_at_exit()  # e.g. setup of fit, then of validate, in one process
        print("running:", dist.is_initialized())
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["running: True", "destroyed 1x, initialised: False"]
