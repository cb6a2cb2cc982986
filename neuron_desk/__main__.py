"""`python -m neuron_desk` runs the command line."""

import sys

from neuron_desk.cli import main

sys.exit(main())
