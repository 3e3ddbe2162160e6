"""examples/resumable_training.py, stopped for good right after the checkpoint of step N is complete.

    python tests/scripts/paused_resumable.py N --out run ...      (the example's own arguments follow N)

Each process touches ``<out>/checkpoints/paused-<rank>`` and waits there, so a test can SIGKILL the run at
exactly that point instead of racing it.
"""

import importlib.util
import sys
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "resumable_training.py"



def main() -> int:
    spec = importlib.util.spec_from_file_location("resumable_training", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    pause_at, argv = int(sys.argv[1]), sys.argv[2:]
    save_checkpoint = example.save_checkpoint

    def save_then_wait(adv, sched, folder, global_step, *args):
        save_checkpoint(adv, sched, folder, global_step, *args)
        if global_step == pause_at:
            (folder / f"paused-{adv.accelerator.process_index}").touch()
            time.sleep(3600)

    example.save_checkpoint = save_then_wait
    return example.main(argv)


if __name__ == "__main__":
    sys.exit(main())
