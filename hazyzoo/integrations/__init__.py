"""Bridges from hazyzoo models to other libraries' APIs (optional extras).

Each submodule imports its library only when a name that needs it is used, so importing
``hazyzoo`` (or a submodule, to write files another library reads) never requires it.
"""
