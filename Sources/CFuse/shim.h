#ifndef UPGRADEFS_CFUSE_SHIM_H
#define UPGRADEFS_CFUSE_SHIM_H
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
#endif
