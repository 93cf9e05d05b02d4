#include <stdio.h>

#include "stats.h"

void print_report(const char *name, const long *values, size_t n) {
  long mean = mean_x100(values, n);
  printf("%s: %zu numbers, sum %ld, max %ld, mean %ld.%02ld\n", name, n, sum_of(values, n),
         max_of(values, n), mean / 100, (mean < 0 ? -mean : mean) % 100);
}
