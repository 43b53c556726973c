import sys

from pyg_fewshot.cli.main import main

sys.exit(main())
