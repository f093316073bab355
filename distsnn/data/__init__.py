"""The data path: webdataset shards (writer, DALI index, manifest), the embedded digits set, DALI
train/val loaders and the shard integrity scan."""
from .dataset_info import DatasetInfo, prepare_dataset
from .loader import Batch, DataError, build_train_loader, build_val_loader
from .shard_patterns import resolve_shards

__all__ = ["Batch", "DataError", "DatasetInfo", "build_train_loader", "build_val_loader", "prepare_dataset",
           "resolve_shards"]
