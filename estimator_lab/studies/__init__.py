"""Studies run from the command line: each builds its results, then its report folder."""
