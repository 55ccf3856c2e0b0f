// A blob with data, read-only data and code but no pointer in data: accepted.
extern "C" {
static const char message[] = "freestanding";
static int counter = 1;
__attribute__((used)) int good_entry(int i) { return message[i % 12] + counter++; }
}
