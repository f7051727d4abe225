"""Ways to identify language neurons from statistics."""

from langneurons.identify.baselines import frequency_contrast, random_like
from langneurons.identify.lape import lape

__all__ = ["frequency_contrast", "lape", "random_like"]
