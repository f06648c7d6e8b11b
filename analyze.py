"""Analyses of a VLM's attention heads: `python analyze.py ANALYSIS [group=choice ...] [key=value ...]`."""

from vseam.cli import analyze_script

if __name__ == "__main__":
    analyze_script()
