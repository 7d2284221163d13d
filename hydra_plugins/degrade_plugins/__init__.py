"""degrade's Hydra plugins: a sweeper that launches only unfinished runs, and a local launcher.

Hydra imports every module here when it looks for plugins, so they import nothing heavy.
"""
