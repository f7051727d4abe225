"""`python -m langneurons ...` runs the command line."""

import sys

from langneurons.cli import main

sys.exit(main())
