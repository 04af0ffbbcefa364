"""Data files shipped with asyncdqn, installed as the package `asyncdqn.data` (pyproject's `package-dir`).

A regular package (this file) rather than a namespace one, so that `importlib.resources.files("asyncdqn.data")`
is a plain folder both in a wheel install and in an editable install's path mapping. Holds no code.
"""
