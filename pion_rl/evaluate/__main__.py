import sys

from pion_rl.evaluate.cli import main

sys.exit(main())
