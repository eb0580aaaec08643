"""The user documentation's examples, run as programs: the pages cannot drift from the code."""
