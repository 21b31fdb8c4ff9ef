"""``python -m anomalyclip_med`` runs the command line (also under ``torchrun``)."""

import sys

from anomalyclip_med.cli.main import main

sys.exit(main())
