"""The data audit: near-duplicates and split leakage, label-error suspects, data checks.

    audit_folder(data)         scan a data folder the way training does, then audit it
    audit_dataset(dataset)     audit an already scanned and split Dataset (training runs)
    write_json / write_html    the report files (imgclf.audit.report)

Only the label-suspect step (with a model) imports TensorFlow.
"""

from imgclf.audit.core import AUDIT_CARD_KEY, audit_dataset, audit_folder, drop_leaks

__all__ = ["AUDIT_CARD_KEY", "audit_dataset", "audit_folder", "drop_leaks"]
