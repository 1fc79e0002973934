"""TRM-ML research workbench: text-region matching for multi-label recognition with missing labels.

The package does the work; the notebooks in ``notebooks/`` tell the story. See README.md for the
map of modules.
"""

__version__ = "0.1.0"
