#pragma once
// Host emulation (see ../README.md): only what kernels/cuda/check.hpp names.
typedef enum { CUDNN_STATUS_SUCCESS = 0, CUDNN_STATUS_BAD_PARAM = 3 } cudnnStatus_t;
inline const char* cudnnGetErrorString(cudnnStatus_t s) { return s == CUDNN_STATUS_SUCCESS ? "success" : "error"; }
