"""Console scripts other than the Hydra app: each a thin argparse over one function."""
