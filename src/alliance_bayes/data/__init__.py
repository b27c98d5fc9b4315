"""The data layer: the data contract, loading and writing a study, and the analysis frame.

``load_study(folder)`` reads and validates a study folder (providers, clients, sessions as CSV,
Parquet, Excel, Stata or SPSS files; columns the contract does not name are refused unless the
folder's ``study.toml`` lists them under ``ignore``) into a :class:`RawStudy`; ``build_frame(study)``
derives the pseudonymised :class:`AnalysisFrame` that the models consume. Bad input raises
:class:`DataContractError`, listing every problem found.
"""

from alliance_bayes.data.contract import DataContractError, validate_study
from alliance_bayes.data.frame import AnalysisFrame, build_frame
from alliance_bayes.data.load import RawStudy, load_study
from alliance_bayes.data.write import write_study

__all__ = [
    "AnalysisFrame",
    "DataContractError",
    "RawStudy",
    "build_frame",
    "load_study",
    "validate_study",
    "write_study",
]
