"""langneurons: find the language-specific neurons of a transformer LM and steer its output language."""


from langneurons.core.errors import LangNeuronsError
from langneurons.core.models import load_model
from langneurons.core.sites import find_sites
from langneurons.core.version import __version__
from langneurons.data.corpus import Corpus, from_texts, hf_dataset, text_files, udhr
from langneurons.identify import RelevanceStats, collect_relevance, crane, frequency_contrast, lape, random_like
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats
from langneurons.stats.collect import collect_stats
from langneurons.tasks.compare import compare_methods, matched_sets
from langneurons.tasks.finetune import FinetuneDelta, apply_finetune, finetuned
from langneurons.tasks.harness import lm_eval_model
from langneurons.tasks.scoring import option_logprobs

__all__ = [
    "ActivationStats", "Corpus", "FinetuneDelta", "LangNeuronsError", "NeuronSet", "RelevanceStats", "__version__",
    "apply_finetune", "collect_relevance", "collect_stats", "compare_methods", "crane", "find_sites", "finetuned",
    "frequency_contrast", "from_texts", "hf_dataset", "lape", "lm_eval_model", "load_model", "matched_sets",
    "option_logprobs", "random_like", "text_files", "udhr",
]
