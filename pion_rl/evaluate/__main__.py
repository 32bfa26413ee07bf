import sys

from pion_rl.evaluate.cli import main

# Guarded: the vllm backend's spawned worker re-imports the main module.
if __name__ == "__main__":
    sys.exit(main())
