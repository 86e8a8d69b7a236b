"""Reports built from run folders: they read files only. Each study's report is a module of its own (the study
table names it); the number formatting they share is :mod:`medassist.utils.format`."""
