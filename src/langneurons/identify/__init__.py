"""Ways to identify language neurons from statistics."""

from langneurons.identify.baselines import frequency_contrast, random_like
from langneurons.identify.crane import crane, crane_scores
from langneurons.identify.lape import lape
from langneurons.stats.relevance import RelevanceStats, collect_relevance

__all__ = ["RelevanceStats", "collect_relevance", "crane", "crane_scores", "frequency_contrast", "lape", "random_like"]
