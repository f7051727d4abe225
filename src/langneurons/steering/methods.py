"""The names of the edits (torch-free, so the command line can offer them without loading torch)."""

METHODS = ("add", "scale", "replace", "diffmean", "residual")  # how an activated language's neurons are edited
DEACTIVATIONS = ("set", "scale")  # how a deactivated language's neurons are edited
