"""augkit datasets: the HDF5 schema, its streaming writer and lazy reader, importers and splits."""

from augkit.data.importers import ImportReport, import_source
from augkit.data.reader import ArrayDataset, H5Dataset, ImageDataset, open_dataset
from augkit.data.schema import REAL, SCHEMA_VERSION, SPLIT_NAMES, DatasetInfo
from augkit.data.split import Split, largest_remainder, stratified_split
from augkit.data.writer import DatasetWriter

__all__ = [
    "ArrayDataset", "DatasetInfo", "DatasetWriter", "H5Dataset", "ImageDataset", "ImportReport", "REAL",
    "SCHEMA_VERSION", "SPLIT_NAMES", "Split", "import_source", "largest_remainder", "open_dataset",
    "stratified_split",
]
