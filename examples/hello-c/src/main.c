/* rake-ts example: summarises the numbers on its command line. */
#include <stdio.h>
#include <stdlib.h>

#include "stats.h"

int main(int argc, char **argv) {
  long *values = malloc(sizeof(long) * (size_t)(argc > 1 ? argc - 1 : 1));
  if (values == NULL) return 1;
  size_t n = parse_numbers(argc - 1, argv + 1, values);
  print_report("hello from rake-ts", values, n);
  free(values);
  return n == (size_t)(argc - 1) ? 0 : 2;
}
