import type { FastifyInstance } from 'fastify';

/** Titles and plain-language explanations for the error page, by HTTP status. */
const MESSAGES: Record<number, { title: string; message: string }> = {
  // Not "the app sent…": a 400 is as often a form a person sent (a choice missing, a form altered or expired).
  400: { title: 'This request cannot be completed', message: 'This server cannot accept the request as it was sent.' },
  401: { title: 'Sign-in required', message: 'You need to sign in again.' },
  403: { title: 'Not allowed', message: 'You are not allowed to do this.' },
  404: { title: 'Page not found', message: 'There is nothing at this address.' },
  405: { title: 'Not allowed here', message: 'This address does not accept this kind of request.' },
  429: { title: 'Too many attempts', message: 'Please wait a moment and try again.' },
  431: { title: 'This address is too long', message: 'The address, or the request that came with it, is larger than this server accepts.' },
  500: { title: 'Something went wrong', message: 'The server could not complete the request. Nothing was changed.' },
  503: { title: 'Temporarily unavailable', message: 'The server is restarting or overloaded. Please try again shortly.' },
};

export interface ErrorPageData {
  readonly status: number;
  readonly error?: string | undefined;
  readonly description?: string | undefined;
  readonly requestId?: string | undefined;
}

/** Renders views/error.ejs; every value is escaped by the template. */
export function renderErrorPage(app: FastifyInstance, basePath: string, data: ErrorPageData): Promise<string> {
  const text = MESSAGES[data.status] ?? MESSAGES[data.status >= 500 ? 500 : 400]!;
  return app.view('error.ejs', {
    ...text,
    basePath,
    error: data.error ?? null,
    description: data.description ?? null,
    requestId: data.requestId ?? null,
  });
}

export function wantsHtml(accept: string | undefined): boolean {
  return !!accept && /\btext\/html\b/.test(accept) && !/^application\/json/.test(accept);
}
