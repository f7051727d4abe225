"""`python -m langneurons.cli` (as torchrun runs it)."""

import sys

from langneurons.cli.main import main

sys.exit(main())
