"""distsnn: distributed training of spiking neural networks (SSCL, TCL/STCL) with DeepSpeed and DALI."""
__version__ = "0.1.0"
