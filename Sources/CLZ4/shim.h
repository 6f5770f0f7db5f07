// The system liblz4 (Debian: liblz4-dev), used for snapshot compression.
#include <lz4.h>
