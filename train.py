#!/usr/bin/env python3
"""Train a Vision Transformer: ``python train.py --device gpu --dataset cifar10``; ``--help`` lists every flag."""
import sys

from npvit.cli import main

if __name__ == "__main__":
    sys.exit(main())
