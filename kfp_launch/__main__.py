"""Entry point for ``python -m kfp_launch``."""

from kfp_launch.cli import main

if __name__ == "__main__":
    main()
