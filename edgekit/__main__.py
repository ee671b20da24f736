from __future__ import annotations

import sys

from edgekit.cli import main

sys.exit(main())
