// SPDX-License-Identifier: Apache-2.0
/* segment.c — placeholder until the segment codec lands in this series. */
#include "segment.h"
