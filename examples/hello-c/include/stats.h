/* The example's one header: every unit includes it, so every compile requires it. */
#ifndef STATS_H
#define STATS_H

#include <stddef.h>

/* Parses decimal integers from argv-style strings; returns how many were valid. */
size_t parse_numbers(int count, char **texts, long *out);

long sum_of(const long *values, size_t n);
long max_of(const long *values, size_t n);
/* The mean, times 100, rounded toward zero: integers keep the output exact. */
long mean_x100(const long *values, size_t n);

/* Prints the report for `values` to stdout. */
void print_report(const char *name, const long *values, size_t n);

#endif
