"""Pure policy logic: selection, precedence, budget, template intent, compliance.

Nothing here talks to the API or imports a framework; every function takes the observed
objects and settings as arguments and returns values.
"""
