"""`python -m langneurons ...` runs the command line."""

import sys

from langneurons.cli.main import main

sys.exit(main())
