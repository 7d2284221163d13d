"""Probes: the literature's instruments for why plain nets degrade, measured on a sweep's runs.

One module per kind (``landscape``, ``lesion``, ``gradcorr``, ``identity``), what they share in
``common``, the settings (checked without torch) in ``settings``, and planning, measuring and
reading a whole sweep in ``runner``. See docs/probes.md.
"""
