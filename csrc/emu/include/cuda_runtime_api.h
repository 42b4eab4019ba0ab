// Emulated CUDA header (see ../cuda_emu.h): the kernels compile for the CPU against this.
#pragma once
#include "../cuda_emu.h"
