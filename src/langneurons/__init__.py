"""langneurons: find the language-specific neurons of a transformer LM and steer its output language."""

__version__ = "0.1.0"

from langneurons.collect import collect_stats
from langneurons.compare import compare_methods, matched_sets
from langneurons.corpus import Corpus, from_texts, hf_dataset, text_files, udhr
from langneurons.errors import LangNeuronsError
from langneurons.finetune import FinetuneDelta, apply_finetune, finetuned
from langneurons.generation import generate
from langneurons.identify import RelevanceStats, collect_relevance, crane, frequency_contrast, lape, random_like
from langneurons.models import load_model
from langneurons.neurons import NeuronSet
from langneurons.scoring import option_logprobs
from langneurons.sites import find_sites
from langneurons.stats import ActivationStats
from langneurons.steering import SteeringConfig, steer

__all__ = [
    "ActivationStats", "Corpus", "FinetuneDelta", "LangNeuronsError", "NeuronSet", "RelevanceStats", "SteeringConfig",
    "__version__", "apply_finetune", "collect_relevance", "collect_stats", "compare_methods", "crane", "find_sites",
    "finetuned", "frequency_contrast", "from_texts", "generate", "hf_dataset", "lape", "load_model", "matched_sets",
    "option_logprobs", "random_like", "steer", "text_files", "udhr",
]
