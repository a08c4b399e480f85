"""``python -m mteb_finegrain.leaderboard add|build|cite ...``."""

import sys

from mteb_finegrain.leaderboard.cli import main

sys.exit(main())
