"""langneurons: find the language-specific neurons of a transformer LM and steer its output language."""

__version__ = "0.1.0"

from langneurons.collect import collect_stats
from langneurons.corpus import Corpus, from_texts, hf_dataset, text_files, udhr
from langneurons.errors import LangNeuronsError
from langneurons.identify import frequency_contrast, lape, random_like
from langneurons.models import load_model
from langneurons.neurons import NeuronSet
from langneurons.sites import find_sites
from langneurons.stats import ActivationStats

__all__ = [
    "ActivationStats", "Corpus", "LangNeuronsError", "NeuronSet", "__version__", "collect_stats", "find_sites",
    "frequency_contrast", "from_texts", "hf_dataset", "lape", "load_model", "random_like", "text_files", "udhr",
]
