"""Learned per-head modulation of a frozen VLM: `python train.py [group=choice ...] [key=value ...]`."""

from vseam.cli import train_script

if __name__ == "__main__":
    train_script()
