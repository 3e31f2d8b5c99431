"""Model families: the contract (:mod:`.contract`), the families, and the registry of them.

Families (text, tabular, image, custom, adopted) import only :mod:`evergreen.models.contract`
and the lower helpers; :mod:`evergreen.models.registry` imports the families, and only code
outside ``models/`` imports it.
"""
