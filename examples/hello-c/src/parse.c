#include <errno.h>
#include <stdlib.h>

#include "stats.h"

size_t parse_numbers(int count, char **texts, long *out) {
  size_t n = 0;
  for (int i = 0; i < count; i++) {
    char *end = NULL;
    errno = 0;
    long v = strtol(texts[i], &end, 10);
    if (errno != 0 || end == texts[i] || *end != '\0') continue;
    out[n++] = v;
  }
  return n;
}
