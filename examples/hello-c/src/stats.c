#include "stats.h"

long sum_of(const long *values, size_t n) {
  long s = 0;
  for (size_t i = 0; i < n; i++) s += values[i];
  return s;
}

long max_of(const long *values, size_t n) {
  long m = n > 0 ? values[0] : 0;
  for (size_t i = 1; i < n; i++)
    if (values[i] > m) m = values[i];
  return m;
}

long mean_x100(const long *values, size_t n) {
  return n == 0 ? 0 : sum_of(values, n) * 100 / (long)n;
}
