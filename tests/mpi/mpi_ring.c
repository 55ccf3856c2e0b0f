/* An MPI job for the acceptance test: every rank adds its share to a running
 * total through MPI_Allreduce, iteration after iteration, and passes a token
 * around the ring point to point; rank 0 prints the final answer, which only
 * comes out right if no message was lost or doubled. Rank 0 writes the
 * iteration it reached to PROGRESS_FILE, so the driver can checkpoint mid-run.
 *   mpi_ring ITERATIONS PROGRESS_FILE */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int iterations = argc > 1 ? atoi(argv[1]) : 100;
  const char* progress = argc > 2 ? argv[2] : NULL;
  double total = 0;
  long token_sum = 0;
  for (int it = 0; it < iterations; it++) {
    double mine = (rank + 1) * (it + 1) * 0.5, sum = 0;
    MPI_Allreduce(&mine, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    total += sum;
    /* A token goes once around the ring, each rank adding its number. */
    long token = 0;
    if (size > 1) {
      if (rank == 0) {
        token = it;
        MPI_Send(&token, 1, MPI_LONG, 1, it, MPI_COMM_WORLD);
        MPI_Recv(&token, 1, MPI_LONG, size - 1, it, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        token_sum += token;
      } else {
        MPI_Recv(&token, 1, MPI_LONG, rank - 1, it, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        token += rank;
        MPI_Send(&token, 1, MPI_LONG, (rank + 1) % size, it, MPI_COMM_WORLD);
      }
    }
    if (rank == 0 && progress) {
      FILE* f = fopen(progress, "w");
      if (f) {
        fprintf(f, "%d\n", it + 1);
        fclose(f);
      }
    }
    usleep(10000);
  }
  if (rank == 0) {
    printf("answer %.1f tokens %ld\n", total, token_sum);
    fflush(stdout);
  }
  MPI_Finalize();
  return 0;
}
